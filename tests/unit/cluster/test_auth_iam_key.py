"""Issue 19: a pool's nodes share the key that encrypts S3 secrets (credentials created on one node work on every
node), derived from the cluster key; a node still decrypts what it stored under its own iam.key before."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from s4.cluster.auth import derive_key, iam_key
from s4.engine.keyring import Keyring, KeyringError


def test_every_node_of_a_pool_decrypts_what_another_encrypted_and_its_own_older_secrets() -> None:
    cluster_key = derive_key("s3-secret", "prod", from_s3_secret=True)
    shared = iam_key(cluster_key)
    assert iam_key(cluster_key) == shared and shared != iam_key(derive_key("s3-secret", "other",
                                                                           from_s3_secret=True))
    own_a, own_b = Fernet.generate_key(), Fernet.generate_key()
    node_a, node_b = Keyring(shared, own_a), Keyring(shared, own_b)
    assert node_b.decrypt(node_a.encrypt("secret-1")) == "secret-1"  # replicated credential
    before = Keyring(own_a).encrypt("older")  # stored by node A in single mode
    assert node_a.decrypt(before) == "older"
    with pytest.raises(KeyringError):
        node_b.decrypt(before)  # another node never had node A's own key
    with pytest.raises(KeyringError):
        Keyring(iam_key(derive_key("s3-secret", "other", from_s3_secret=True))).decrypt(node_a.encrypt("x"))
