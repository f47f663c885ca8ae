"""A whole study from one YAML file: stages cached by a hash of their inputs and config."""
