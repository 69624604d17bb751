"""The learned one-step map: configuration and presets (:mod:`.config`), the
:class:`~slowflow.model.flowmap.FlowMap` module (:mod:`.flowmap`), the closed-form basis
drift (:mod:`.basis`), multi-step scores (:mod:`.score`) and model files (:mod:`.io`)."""
