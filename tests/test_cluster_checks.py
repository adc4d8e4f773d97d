"""Bad input for a cluster, caught before any job is submitted, in one line: a database store
without its driver, a SLURM launcher without sbatch. (With PostgreSQL and SLURM running:
tests/test_cluster.py.)"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from sbert_exp.config.schema import TrackingConfig
from sbert_exp.errors import ConfigError
from sbert_exp.job.sweeper import check_slurm
from sbert_exp.tracking.store import check_reachable

SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def test_a_database_uri_without_its_driver_names_the_fix():
    with pytest.raises(ConfigError) as e:
        check_reachable(TrackingConfig(uri="mysql://ml:secret@127.0.0.1:3306/mlflow"))
    assert str(e.value) == (
        "tracking.uri=mysql://ml:***@127.0.0.1:3306/mlflow needs the database driver MySQLdb, "
        "which is not installed: pip install 'sbert_exp[server]' (PostgreSQL; make install has "
        "it), or log through a tracking server (tracking=server)")


def test_a_refused_database_names_the_fix_and_hides_the_password():
    with pytest.raises(ConfigError) as e:  # port 9: nothing listens there
        check_reachable(TrackingConfig(uri="postgresql://ml:secret@127.0.0.1:9/mlflow"))
    assert str(e.value).startswith("tracking.uri=postgresql://ml:***@127.0.0.1:9/mlflow: cannot "
                                   "connect (connection failed: ")
    assert str(e.value).endswith("): check the user, password, host and database name")
    assert "secret" not in str(e.value)


def test_a_slurm_launcher_without_sbatch_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch there
    with pytest.raises(ConfigError) as e:
        check_slurm(OmegaConf.create({"_target_": SLURM, "partition": "debug"}))
    assert str(e.value) == (
        "hydra/launcher=submitit_slurm needs SLURM's sbatch on the PATH: run the sweep on a "
        "SLURM login node, start the local one-node cluster (make cluster-up), or use "
        "hydra/launcher=submitit_local")
    check_slurm(OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher."
                                               "BasicLauncher"}))  # other launchers: no check
