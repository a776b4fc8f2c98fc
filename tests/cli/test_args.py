import argparse

import pytest

from pgm_lab.cli._args import (
    SEED_MAX,
    device,
    float_in,
    input_dir,
    int_in,
    output_dir,
    output_file,
    plain,
    seed,
)


@pytest.mark.parametrize("text", ["-1", str(SEED_MAX + 1), str(2**64 + 1), "1e3", "1.0", "nan",
                                  "", " ", "\u0663", "1_000", "0x10", "abc"])
def test_seed_refuses_what_numpy_and_torch_cannot_take(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer"):
        seed(text)


def test_seed_accepts_its_whole_range():
    assert seed("0") == 0 and seed(str(SEED_MAX)) == SEED_MAX and seed(" 7 ") == 7


def test_int_in_checks_both_ends_and_ascii_digits():
    parse = int_in(1, 10)
    assert parse("1") == 1 and parse("10") == 10 and parse("+3") == 3
    for bad in ("0", "11", "-1", "\u0663", "\uff13", "3.0", "1e1"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected an integer"):
            parse(bad)


def test_float_in_refuses_non_finite_and_out_of_range():
    lr = float_in(0, lo_open=True)
    assert lr("3e-3") == 3e-3 and lr(".5") == 0.5
    for bad in ("0", "-1", "nan", "inf", "-inf", "1e400", "x", "\u0663", ""):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected a finite number > 0"):
            lr(bad)
    momentum = float_in(0, 1, hi_open=True)
    assert momentum("0") == 0.0
    with pytest.raises(argparse.ArgumentTypeError, match=r"in \[0, 1\)"):
        momentum("1")


def test_output_dir(tmp_path):
    assert output_dir(str(tmp_path)) == tmp_path
    assert output_dir(str(tmp_path / "a" / "b")) == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # checking creates nothing
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(argparse.ArgumentTypeError, match="got the existing file"):
        output_dir(str(afile))
    with pytest.raises(argparse.ArgumentTypeError, match="inside the file"):
        output_dir(str(afile / "sub"))
    with pytest.raises(argparse.ArgumentTypeError, match="is not writable"):
        output_dir("/proc/pgm_lab_out")  # unwritable, even for root
    assert list(tmp_path.iterdir()) == [afile]  # the probe file is gone


def test_output_file(tmp_path):
    assert output_file(str(tmp_path / "new" / "x.csv")) == tmp_path / "new" / "x.csv"
    existing = tmp_path / "x.csv"
    existing.write_text("kept")
    assert output_file(str(existing)) == existing and existing.read_text() == "kept"
    with pytest.raises(argparse.ArgumentTypeError, match="got the folder"):
        output_file(str(tmp_path))
    with pytest.raises(argparse.ArgumentTypeError, match="inside the file"):
        output_file(str(existing / "c.pt"))
    with pytest.raises(argparse.ArgumentTypeError, match="is not writable"):
        output_file("/proc/pgm_lab_out/c.pt")


def test_plain_unquotes_rest_and_rewraps_paragraphs():
    doc = ("Run :func:`pgm_lab.train.fit` on ``--out``\nand :class:`~pgm_lab.dag.DAG`.\n\n"
           "  pgm-lab bn info asia\n  pgm-lab bn info alarm")
    assert plain(doc) == ("Run pgm_lab.train.fit on --out and pgm_lab.dag.DAG.\n\n"
                          "  pgm-lab bn info asia\n  pgm-lab bn info alarm")


def test_device_and_input_dir(tmp_path):
    assert device("cpu") == "cpu" and device("auto") == "auto"
    with pytest.raises(argparse.ArgumentTypeError, match="unknown device 'tpu'"):
        device("tpu")
    assert input_dir(str(tmp_path)) == tmp_path
    with pytest.raises(argparse.ArgumentTypeError, match=r"existing folder.*\(missing\)"):
        input_dir(str(tmp_path / "nope"))
    (tmp_path / "f").write_text("")
    with pytest.raises(argparse.ArgumentTypeError, match=r"\(a file\)"):
        input_dir(str(tmp_path / "f"))


@pytest.mark.parametrize("path_type", [output_dir, output_file, input_dir])
def test_an_empty_path_is_refused_not_the_current_folder(path_type):
    with pytest.raises(argparse.ArgumentTypeError, match="got an empty string"):
        path_type("")
