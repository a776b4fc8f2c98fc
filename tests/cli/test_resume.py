"""``--resume`` of ``pgm-lab rbm`` and ``pgm-lab compare-bounds``: safe loading, no mix-ups."""

import torch

from pgm_lab.cli.main import main

RBM = ["rbm", "--dataset", "bars", "--hidden", "4", "--batch-size", "10", "--lr", "0.1",
       "--gibbs-steps", "2", "--no-progress"]
VAE = ["compare-bounds", "--epochs", "1", "--hidden", "8", "--z-dim", "2", "--n-train", "40",
       "--n-test", "10", "--eval-k", "1", "2", "--batch-size", "20", "--objectives", "elbo",
       "--no-progress"]


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for any code a pickle may run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_rbm_resume_allows_more_epochs_refuses_other_settings_unless_forced(tmp_path, capsys):
    ckpt, out = str(tmp_path / "ck.pt"), str(tmp_path / "out")
    common = [*RBM, "--checkpoint", ckpt, "--out", out]
    assert main([*common, "--epochs", "1"]) == 0
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    capsys.readouterr()
    assert main([*common, "--epochs", "3", "--resume", "--lr", "0.2"]) == 1
    err = capsys.readouterr().err
    assert "optim.args.rbm.W.lr: 0.1 -> 0.2" in err and "--resume force" in err
    assert len(err.strip().splitlines()) == 1
    assert main([*common, "--epochs", "3", "--resume", "force", "--lr", "0.2"]) == 0
    assert torch.load(ckpt, weights_only=True)["epoch"] == 3


def test_rbm_resume_refuses_a_malicious_checkpoint(tmp_path, capsys):
    ckpt, marker = tmp_path / "ck.pt", tmp_path / "marker"
    torch.save({"version": 2, "epoch": 1, "history": _Payload(marker)}, ckpt)
    argv = [*RBM, "--epochs", "2", "--checkpoint", str(ckpt), "--resume", "--out",
            str(tmp_path / "out")]
    assert main(argv) == 1
    assert "nothing in it was run" in capsys.readouterr().err and not marker.exists()


def test_compare_bounds_resume_refuses_a_malicious_checkpoint(tmp_path, capsys):
    out, marker = tmp_path / "run", tmp_path / "marker"
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"version": 2, "epoch": 1, "history": _Payload(marker)},
               out / "checkpoints" / "elbo.pt")
    assert main([*VAE, "--out", str(out), "--resume"]) == 1
    assert "nothing in it was run" in capsys.readouterr().err and not marker.exists()


def test_compare_bounds_resume_with_another_learning_rate_is_refused(tmp_path, capsys):
    argv = [*VAE, "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--resume", "--lr", "0.01"]) == 1
    assert "optim.args.lr: 0.003 -> 0.01" in capsys.readouterr().err
