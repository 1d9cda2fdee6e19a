import textwrap
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.config import load_datasets, load_zoo
from benchmark.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_unknown_key_names_file_line_and_closest_key(tmp_path):
    p = write(tmp_path, "zoo.yaml", """\
        models:
          - name: a
            timm: resnet18
          - name: b
            timm: resnet18
            pretrianed: false
        """)
    with pytest.raises(ConfigError) as e:
        load_zoo(p)
    msg = str(e.value)
    assert f"{p}:4" in msg and "'pretrianed'" in msg and "Did you mean pretrained" in msg


def test_malformed_yaml_reports_line(tmp_path):
    p = write(tmp_path, "zoo.yaml", "models:\n  - name: a\n    timm: [resnet18\n")
    with pytest.raises(ConfigError, match=r"zoo.yaml:\d+: malformed YAML"):
        load_zoo(p)


@pytest.mark.parametrize("body,match", [
    ("  - name: a\n  - name: a\n    timm: x\n", "exactly one source"),
    ("  - name: a\n    timm: x\n  - name: a\n    timm: y\n", "duplicate name"),
    ("  - timm: x\n", "missing 'name'"),
    ("  - name: a\n    timm: x\n    hub: a/b:c\n", "exactly one source"),
    ("  - name: a\n    checkpoint: w.pth\n", "needs 'arch'"),
])
def test_zoo_entry_errors(tmp_path, body, match):
    with pytest.raises(ConfigError, match=match):
        load_zoo(write(tmp_path, "zoo.yaml", "models:\n" + body))


def test_dataset_types_and_extra_test_are_checked(tmp_path):
    p = write(tmp_path, "d.yaml", "datasets:\n  - name: a\n    packaged: digits\n    resolution: big\n")
    with pytest.raises(ConfigError, match="'resolution' must be an integer"):
        load_datasets(p)
    p = write(tmp_path, "d.yaml", "datasets:\n  - name: a\n    packaged: digits\n    extra_test: [nope]\n")
    with pytest.raises(ConfigError, match="unknown extra_test dataset 'nope'"):
        load_datasets(p)


def test_shipped_configs_validate_offline(capsys):
    assert main(["validate", "--zoo", str(ROOT / "model_zoo.yaml"), "--datasets", str(ROOT / "datasets.yaml")]) == 0
    assert main(["validate", "--zoo", str(ROOT / "examples/offline_zoo.yaml"),
                 "--datasets", str(ROOT / "examples/offline_datasets.yaml")]) == 0


def test_cli_config_errors_exit_2_with_one_line(tmp_path, capsys):
    zoo = write(tmp_path, "zoo.yaml", "models:\n  - name: a\n    timm: resnet_18\n    pretrained: false\n")
    data = write(tmp_path, "d.yaml", "settings:\n  protocols: [linaer]\n  target: knn\n"
                                     "datasets:\n  - name: d\n    packaged: digits\n")
    assert main(["run", "--zoo", str(zoo), "--datasets", str(data), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench: error:") and len(err.splitlines()) == 1
    assert "resnet_18" in err or "linaer" in err
    assert main(["validate", "--zoo", str(zoo), "--datasets", str(data)]) == 2
    err = capsys.readouterr().err
    assert "not a timm architecture" in err and "Did you mean linear" in err
    missing = write(tmp_path, "zoo2.yaml", "models:\n  - name: c\n    checkpoint: /no/such.pth\n    arch: resnet18\n")
    assert main(["validate", "--zoo", str(missing), "--datasets", str(data)]) == 2
    assert "checkpoint file '/no/such.pth' not found" in capsys.readouterr().err


def test_unknown_hyperparameter_is_a_config_error(tmp_path, capsys):
    zoo = write(tmp_path, "zoo.yaml", "models:\n  - name: a\n    timm: resnet18\n    pretrained: false\n")
    data = write(tmp_path, "d.yaml", "settings:\n  target: knn\nprotocols:\n  knn: {kk: 3}\n"
                                     "datasets:\n  - name: d\n    packaged: digits\n")
    assert main(["validate", "--zoo", str(zoo), "--datasets", str(data)]) == 2
    assert "unknown hyperparameter of 'knn' 'kk'" in capsys.readouterr().err


def test_exponent_numbers_load_as_floats_as_researchers_write_them(tmp_path, capsys):
    """PyYAML (YAML 1.1) reads `1e-4` as a string; every bench YAML file reads it as the float 0.0001."""
    from benchmark.protocols import check_hp
    data = write(tmp_path, "d.yaml", """\
        settings: {protocols: [finetune], target: finetune}
        protocols:
          finetune: {lr: 1e-4, wd: [1e-4, 5e-5, 1E-3, 0], epochs: 1}
        datasets:
          - {name: d, packaged: digits}
        """)
    cfg = load_datasets(data)
    hp = cfg.protocols["finetune"]
    assert hp["lr"] == 0.0001 and isinstance(hp["lr"], float)
    assert hp["wd"] == [1e-4, 5e-5, 1e-3, 0]
    check_hp("finetune", hp, "d.yaml")  # a number in range: accepted
    zoo = write(tmp_path, "zoo.yaml", "models:\n  - name: a\n    timm: resnet18\n    pretrained: false\n"
                                      "    mean: [-2e+3, 5e-1, 1E0]\n")
    assert load_zoo(zoo).models[0].mean == [-2000.0, 0.5, 1.0]
    assert main(["validate", "--zoo", str(zoo), "--datasets", str(data)]) == 0


@pytest.mark.parametrize("section,name", [
    ("models", "/tmp/x/ABS_MODEL"), ("models", "../escaped_model"), ("datasets", "../escaped_ds"),
    ("models", "a/b"), ("models", "."), ("datasets", ".."), ("models", ".hidden"), ("models", "a\\b"),
    ("models", "x" * 101), ("datasets", "with space")])
def test_names_that_are_paths_fail_at_load_with_file_line_and_fix(tmp_path, capsys, section, name):
    zoo = write(tmp_path, "zoo.yaml", "models:\n  - name: ok_model\n    timm: resnet18\n    pretrained: false\n")
    data = write(tmp_path, "d.yaml", "datasets:\n  - name: d\n    packaged: digits\n")
    bad = {"models": zoo, "datasets": data}[section]
    source = "    timm: resnet18\n    pretrained: false\n" if section == "models" else "    packaged: digits\n"
    bad.write_text(bad.read_text() + f"  - name: '{name}'\n" + source)  # the second entry, at line 5 / 4
    out = tmp_path / "out"
    assert main(["run", "--zoo", str(zoo), "--datasets", str(data), "--out", str(out), "--protocols", "knn"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"bench: error: {bad}:")
    line = 5 if section == "models" else 4
    assert f"{bad}:{line}:" in err and repr(name) in err and "not a path" in err and "rename it, e.g. '" in err
    assert main(["validate", "--zoo", str(zoo), "--datasets", str(data)]) == 2
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob("escaped*")) and not list(out.rglob("*.json"))


def test_names_with_dots_dashes_and_plus_are_fine(tmp_path):
    zoo = write(tmp_path, "zoo.yaml", "models:\n  - name: vit-s16.dino+ft_v2\n    timm: resnet18\n"
                                      "    pretrained: false\n")
    assert load_zoo(zoo).models[0].name == "vit-s16.dino+ft_v2"
