"""Reading a YAML config into typed settings: the file, its sections, the registered extension
names, command-line overrides of keys."""
