"""Sealing personal fields: what AES-GCM needs of its nonces."""

import base64
import os

from sync.seal import Sealer


def test_seal_nonces_never_repeat_across_pools_and_a_forked_child(tmp_path):
    # Nonces come from a pool of the OS's randomness; a repeated nonce under one key would break AES-GCM.
    sealer = Sealer.from_key_file(tmp_path / "nonce.key")

    def nonce(sealed: str) -> bytes:
        return base64.b64decode(sealed.partition(":")[2])[:12]

    parent = [nonce(sealer.seal("x")) for _ in range(1500)]  # three pools' worth
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child seals with the pool it inherited: it must draw its own
        os.close(reader)
        os.write(writer, b"".join(nonce(sealer.seal("x")) for _ in range(100)))
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        data = pipe.read()
    os.waitpid(child, 0)
    forked = [data[i:i + 12] for i in range(0, len(data), 12)]
    after = [nonce(sealer.seal("x")) for _ in range(100)]
    assert len(forked) == 100
    assert len(set(parent + forked + after)) == len(parent) + len(forked) + len(after)
