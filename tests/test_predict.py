"""The deployment CLI: images and idx files in, classes out, with NumPy, onnxruntime and PIL only.

    python -m pytest -q tests/test_predict.py
"""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from common import data
from export import predict
from export.verify import run_onnx, session
from tests.conftest import idx_bytes, run_predict

ROOT = Path(__file__).resolve().parent.parent
N_IDX = 300


@pytest.fixture(scope="module")
def model_path(tiny_onnx) -> Path:
    """The tiny lstm-last, trained with normalisation on: predict must read it from the metadata."""
    return tiny_onnx("lstm-last")[1]


@pytest.fixture(scope="module")
def test_u8(mnist_dir):
    """The first N_IDX real test images as uint8, and their labels."""
    test = data.load_split("test", mnist_dir, limit=N_IDX)
    return (test.images * 255).round().astype(np.uint8), test.labels


def expected_logits(model_path: Path, images_u8: np.ndarray) -> np.ndarray:
    """What the model gives on images prepared exactly as in training (common.data.prepare)."""
    return run_onnx(session(model_path), data.prepare(images_u8, normalize=True))


def test_png_matches_training_preprocessing(model_path, test_u8, tmp_path, capsys):
    images, _ = test_u8
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(images[i]).save(paths[-1])
        assert np.array_equal(predict.read_image(paths[-1]), images[i])  # 28x28 passes through untouched
    code, out, _ = run_predict([model_path, *paths], capsys)
    logits = expected_logits(model_path, images[:3])
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3
    for line, path, probs in zip(lines, paths, probabilities):
        assert line.startswith(f"{path}: {probs.argmax()} ({100 * probs.max():.1f}%)")
        assert " ".join(f"{k}:{p:.3f}" for k, p in enumerate(probs)) in line


def test_large_dark_on_light_image_is_made_mnist_like(test_u8, tmp_path):
    digit = test_u8[0][0]
    path = tmp_path / "paper.jpg"
    Image.fromarray(255 - digit).resize((140, 200)).convert("RGB").save(path)  # black ink on white, stretched
    image = predict.read_image(path)
    assert image.shape == (28, 28) and image.dtype == np.uint8
    assert image[[0, -1]].max() < 30 and image[:, [0, -1]].max() < 30  # inverted: dark border like MNIST
    rows, cols = np.nonzero(image > 50)
    assert rows.max() - rows.min() <= 20 and cols.max() - cols.min() <= 20  # fitted into the 20x20 box
    mass = image.astype(float)
    centre = [(np.indices(image.shape)[axis] * mass).sum() / mass.sum() for axis in (0, 1)]
    assert np.allclose(centre, 14, atol=1.5)
    transparent = tmp_path / "transparent.png"
    rgba = np.zeros((50, 50, 4), np.uint8)
    rgba[10:40, 22:28] = (0, 0, 0, 255)  # a black stroke on a fully transparent background
    Image.fromarray(rgba, "RGBA").save(transparent)
    assert predict.read_image(transparent).max() == 255 and predict.read_image(transparent)[0].max() == 0


@pytest.mark.parametrize("gz", [False, True])
def test_idx_accuracy(model_path, test_u8, tmp_path, capsys, gz):
    images, labels = test_u8
    paths = []
    for name, array in (("images", images), ("labels", labels.astype(np.uint8))):
        payload = idx_bytes(array)
        paths.append(tmp_path / (f"{name}.gz" if gz else name))
        paths[-1].write_bytes(gzip.compress(payload) if gz else payload)
    code, out, _ = run_predict([model_path, "--idx-images", paths[0], "--idx-labels", paths[1]], capsys)
    correct = int((expected_logits(model_path, images).argmax(1) == labels).sum())
    assert code == 0 and f"accuracy {100 * correct / N_IDX:.2f}% ({correct}/{N_IDX})" in out
    assert "the checkpoint recorded 12.34%" in out


def test_imports_no_framework(model_path, test_u8, tmp_path):
    Image.fromarray(test_u8[0][0]).save(tmp_path / "digit.png")
    code = ("import sys; from export.predict import main; main(sys.argv[1:]); "
            "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'jax', 'jaxlib', 'flax', 'onnxscript'}); "
            "print('frameworks loaded:', loaded)")
    result = subprocess.run([sys.executable, "-c", code, str(model_path), str(tmp_path / "digit.png")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "frameworks loaded: []" in result.stdout


def foreign_model(path: Path, shape: list, props: dict[str, str] | None = None) -> Path:
    """A valid ONNX model that is not ours: Identity on a float input of `shape`."""
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "foreign",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    for key, value in (props or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save_model(model, str(path))
    return path


def test_error_cases(model_path, test_u8, tmp_path, capsys):
    Image.fromarray(test_u8[0][0]).save(tmp_path / "digit.png")
    our_props = {p.key: p.value for p in onnx.load(str(model_path)).metadata_props}
    stripped = onnx.load(str(model_path))
    del stripped.metadata_props[:]
    onnx.save_model(stripped, str(tmp_path / "stripped.onnx"))
    (tmp_path / "corrupt.onnx").write_bytes(model_path.read_bytes()[:5000])
    (tmp_path / "notes.png").write_text("not an image")
    bad_meta = dict(our_props, preprocessing="{not json")
    (tmp_path / "images.idx").write_bytes(idx_bytes(test_u8[0][:5]))
    (tmp_path / "labels.idx").write_bytes(idx_bytes(test_u8[1][:4].astype(np.uint8)))
    cases = {
        "missing model": ([tmp_path / "nope.onnx", tmp_path / "digit.png"], "not found"),
        "missing image": ([model_path, tmp_path / "nope.png"], "image"),
        "non-image file": ([model_path, tmp_path / "notes.png"], "is not an image PIL can read"),
        "no metadata": ([tmp_path / "stripped.onnx", tmp_path / "digit.png"], "not one exported by this project"),
        "foreign model": ([foreign_model(tmp_path / "foreign.onnx", ["N", 28, 28]), tmp_path / "digit.png"],
                          "not one exported by this project"),
        "wrong input shape": ([foreign_model(tmp_path / "flat.onnx", ["N", 784], our_props), tmp_path / "digit.png"],
                              "predict needs one float input [batch, 28, 28]"),
        "bad metadata": ([foreign_model(tmp_path / "meta.onnx", ["N", 28, 28], bad_meta), tmp_path / "digit.png"],
                         "unreadable"),
        "corrupt onnx": ([tmp_path / "corrupt.onnx", tmp_path / "digit.png"], "is not a loadable ONNX model"),
        "random bytes": ([tmp_path / "notes.png", tmp_path / "digit.png"], "is not a loadable ONNX model"),
        "nothing to do": ([model_path], "give image files"),
        "labels without images": ([model_path, "--idx-labels", tmp_path / "labels.idx"], "needs --idx-images"),
        "idx not idx": ([model_path, "--idx-images", tmp_path / "digit.png", "--idx-labels", tmp_path / "digit.png"],
                        "is not an MNIST image file"),
        "idx counts differ": ([model_path, "--idx-images", tmp_path / "images.idx", "--idx-labels",
                               tmp_path / "labels.idx"], "must be the same"),
        "idx missing": ([model_path, "--idx-images", tmp_path / "nope", "--idx-labels", tmp_path / "labels.idx"],
                        "not found"),
    }
    for name, (argv, message) in cases.items():
        code, out, err = run_predict(argv, capsys)
        assert code == 2, name
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (name, err)


def test_bad_files_do_not_stop_the_batch(model_path, test_u8, tmp_path, capsys):
    """Readable images are classified, each unreadable one is reported, and the exit status is 2 at the end."""
    images, _ = test_u8
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_text("not an image")
    Image.fromarray(images[1]).save(tmp_path / "c.png")
    code, out, err = run_predict([model_path, tmp_path / "a.png", tmp_path / "b.png", tmp_path / "missing.png",
                                  tmp_path / "c.png"], capsys)
    lines = out.strip().splitlines()
    probabilities = predict.softmax(expected_logits(model_path, images[:2]))
    assert code == 2 and err.count("\n") == 1 and "2 of 4 images could not be read" in err
    assert lines[0].startswith(f"skipped: {tmp_path / 'b.png'} is not an image") and "missing.png" in lines[1]
    for line, name, probs in zip(lines[2:], ("a.png", "c.png"), probabilities):
        assert line.startswith(f"{tmp_path / name}: {probs.argmax()} ({100 * probs.max():.1f}%)")
    assert len(lines) == 4


def test_folder_and_json(model_path, test_u8, tmp_path, capsys):
    images, _ = test_u8
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(images[i]).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image, and not named like one: ignored")
    code, out, _ = run_predict([model_path, folder, "--json"], capsys)
    result = json.loads(out)
    probabilities = predict.softmax(expected_logits(model_path, images[:3]))
    assert code == 0 and result["errors"] == [] and result["accuracy"] is None
    assert [p["image"] for p in result["predictions"]] == [str(folder / f"{i}.png") for i in range(3)]
    np.testing.assert_allclose([p["probabilities"] for p in result["predictions"]], probabilities, rtol=1e-6)
    assert [p["class"] for p in result["predictions"]] == [str(k) for k in probabilities.argmax(1)]
    (tmp_path / "empty").mkdir()
    code, _, err = run_predict([model_path, tmp_path / "empty"], capsys)
    assert code == 2 and "holds no image files" in err and err.count("\n") == 1


def test_idx_images_without_labels_classifies(model_path, test_u8, tmp_path, capsys):
    images, _ = test_u8
    (tmp_path / "images.idx").write_bytes(idx_bytes(images[:5]))
    code, out, _ = run_predict([model_path, "--idx-images", tmp_path / "images.idx", "--json"], capsys)
    result = json.loads(out)
    expected = expected_logits(model_path, images[:5]).argmax(1)
    assert code == 0 and [p["class"] for p in result["predictions"]] == [str(k) for k in expected]
    assert result["predictions"][4]["image"] == f"{tmp_path / 'images.idx'}[4]"
    code, out, _ = run_predict([model_path, "--idx-images", tmp_path / "images.idx"], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 5


def test_blank_image_is_classified_with_a_warning(model_path, tmp_path, capsys):
    """An all-black image still gets the model's answer, but stderr (and the JSON) say it means nothing."""
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "black.png")
    code, out, err = run_predict([model_path, tmp_path / "black.png"], capsys)
    assert code == 0 and out.startswith(f"{tmp_path / 'black.png'}: ")
    assert err == f"warning: {tmp_path / 'black.png'}: {predict.BLANK_WARNING}\n"
    code, out, _ = run_predict([model_path, tmp_path / "black.png", "--json"], capsys)
    assert json.loads(out)["warnings"] == [{"image": str(tmp_path / "black.png"), "warning": predict.BLANK_WARNING}]


def test_only_unreadable_images_and_a_checkpoint_as_model(model_path, tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    code, _, err = run_predict([model_path, tmp_path / "notes.png"], capsys)
    assert code == 2 and "1 of 1 images could not be read" in err and err.rstrip().endswith("none was classified")
    (tmp_path / "model.safetensors").write_bytes(b"not read: the name says what it is")
    code, _, err = run_predict([tmp_path / "model.safetensors", tmp_path / "notes.png"], capsys)
    assert code == 2 and err.count("\n") == 1 and "is a checkpoint, not an ONNX model: export it first with " \
        f"`python -m export.onnx --checkpoint {tmp_path / 'model.safetensors'}" in err


def test_reader_that_stops_early_gets_no_traceback(model_path, test_u8, tmp_path):
    """`predict --json | head`: the reader closes the pipe (here before predict writes its first line)."""
    Image.fromarray(test_u8[0][0]).save(tmp_path / "digit.png")
    process = subprocess.Popen([sys.executable, "-m", "export.predict", str(model_path), str(tmp_path / "digit.png"),
                                "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # as head does once it has its lines
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 1 and err == "", err
