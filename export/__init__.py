"""ONNX export of the recurrent MNIST classifiers, and a deployment CLI that needs no framework.

    python -m export.onnx --checkpoint RUN/model.safetensors --out model.onnx [--quantize int8]
    python -m export.onnx --all RESULTS_DIR
    python -m export.predict model.onnx digit.png [more.png ...]

This package file imports nothing, so that `export.predict` (NumPy, onnxruntime and PIL only)
can be imported without pulling in torch.
"""
