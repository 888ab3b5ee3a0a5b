"""Python `cryptography` baseline for `crypto-compare`.

Times, on one thread, the operations `crypto-compare` times on our side and
prints one JSON object of operations per second:

- fernet_encrypt / fernet_decrypt: a reused `Fernet` object and a 32-byte
  secret, the way an application holding one key uses it;
- record_seal / record_open: what our per-credential path does, written with
  the same library: HKDF-SHA256 of the master key for (owner, credential id),
  then Fernet under the derived key.

Usage: python3 bench/python_fernet.py [SECONDS_PER_OPERATION]
"""

import base64
import json
import os
import sys
import time

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET = b"odoo-password-of-32-bytes-long!!"
MASTER = base64.urlsafe_b64decode("cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=")
SALT = b"vault.v1 record keys"
INFO = b"vault.v1 record\0user-42\0" + os.urandom(16)


def record_key():
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=INFO)
    return Fernet(base64.urlsafe_b64encode(kdf.derive(MASTER)))


def rate(operation, seconds):
    """Calls `operation` in batches until `seconds` have passed; calls/s."""
    calls, batch = 0, 256
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(batch):
            operation()
        calls += batch
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - started)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    fernet = Fernet(Fernet.generate_key())
    token = fernet.encrypt(SECRET)
    sealed = record_key().encrypt(SECRET)
    result = {
        "fernet_encrypt": rate(lambda: fernet.encrypt(SECRET), seconds),
        "fernet_decrypt": rate(lambda: fernet.decrypt(token), seconds),
        "record_seal": rate(lambda: record_key().encrypt(SECRET), seconds),
        "record_open": rate(lambda: record_key().decrypt(sealed), seconds),
    }
    import cryptography

    result["version"] = cryptography.__version__
    result["python"] = sys.version.split()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
