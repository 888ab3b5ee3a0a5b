"""Stubs generated from `proto/vault/v1/vault.proto`; see `regenerate.py`.

Everything else in this folder is generated: do not edit it by hand.
"""
