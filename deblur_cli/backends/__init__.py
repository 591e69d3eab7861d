"""What runs the network: torch (CPU or CUDA) or ONNX Runtime, the ONNX exporter, execution
providers and device and precision resolution."""
