"""Local runs of a function through the emulator, with the layer, an OTLP receiver and moto."""
