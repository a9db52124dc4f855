"""ONNX export of the recurrent MNIST classifiers, and deployment tools that need no framework.

    python -m export.onnx --checkpoint RUN/model.safetensors --out model.onnx [--quantize int8] [--streaming]
    python -m export.onnx --all RESULTS_DIR
    python -m export.predict model.onnx digit.png [more.png | FOLDER ...] [--json]
    python -m export.predict model.step.onnx digit.png --stream
    python -m export.serve_web model.onnx                 # the draw-a-digit page (export/web/)

Deployment side (NumPy, onnxruntime, PIL only): predict, images, runtime, streaming, metadata,
serve_web. Exporter side (torch): onnx, step, verify, quantize. This package file imports nothing,
so that `export.predict` can be imported without pulling in torch. docs/DEPLOY.md has the details.
"""
