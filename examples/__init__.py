"Example user modules: model and data factories referenced from the YAML files beside them as 'examples.MODULE:FUNCTION'."
