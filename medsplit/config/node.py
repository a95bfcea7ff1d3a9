"""The `node:` section of a site YAML: how this site joins a run (experiment, server, credentials, run folder)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from .loader import StrictModel, config_error, problem

__all__ = ["NodeConfig"]


class NodeConfig(StrictModel):
    """Paths are relative to the site YAML's folder. At most one of secret_env, secret_file.

    The site must be able to tell the real server from an impostor: ``server_key`` (the server's public key
    from `medsplit provision`, pinned here), a shared secret, or both.
    """

    experiment: str | None = Field(None, description="the copy of the experiment file the site reviewed")
    server: str | None = Field(None, description="HOST:PORT of the study's server")
    party: str | None = Field(None, description="this site's party in the topology (default: from the experiment)")
    secret_env: str | None = Field(None, description="environment variable holding the shared secret")
    secret_file: str | None = Field(None, description="file holding the shared secret")
    private_key: str | None = Field(None, description="this site's Ed25519 private key (PEM, from `medsplit "
                                                      "provision`)")
    server_key: str | None = Field(None, description="the server's Ed25519 public key, pinned (server.pub from "
                                                     "`medsplit provision`)")
    parties: str | None = Field(None, description="the study's parties and their public keys (parties.json from "
                                                  "`medsplit provision`), to check sites this one talks to directly")
    run_dir: str | None = Field(None, description="checkpoints and the audit log, at the site")

    @field_validator("server")
    @classmethod
    def _host_port(cls, server: str | None) -> str | None:
        if server is not None:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise problem(f"'{server}' is not HOST:PORT", "write e.g. server: 10.0.0.5:29500")
        return server

    @model_validator(mode="after")
    def _one_secret(self) -> NodeConfig:
        if self.secret_env and self.secret_file:
            raise problem("secret_env and secret_file are both set", "keep one of them")
        return self

    def read_secret(self, config: Path) -> bytes | None:
        """The shared secret from the named environment variable or file, or None when neither is set.

        ``config`` is the site YAML: a relative secret_file is read from its folder, and errors name it.
        """
        if self.secret_env:
            value = os.environ.get(self.secret_env)
            if not value:
                raise config_error(config, "node.secret_env", f"names {self.secret_env}, which is not set",
                                   f"export {self.secret_env}=<the secret agreed with the server>")
            return value.encode()
        if self.secret_file:
            path = config.parent / self.secret_file
            try:
                return path.read_bytes().strip()
            except OSError as exc:
                raise config_error(config, "node.secret_file", f"cannot read {path}: {exc.strerror}",
                                   "give the path of the file that holds this site's secret") from exc
        return None
