"""Local tooling, never shipped in the layer: the Lambda emulator, the OTLP receiver, local
runs, the `lambdawrap` command and the layer build."""
