"""Export a trained U-Net for other tools: ONNX, TensorFlow SavedModel, BioImage Model Zoo."""
