"""The golden image every simulated host boots (swtpm hosts and the software-TPM load fleet alike).

Kept free of tpm2-tss imports so a load generator runs wherever the Trust Manager does.
"""

from __future__ import annotations

from collections.abc import Mapping

CMDLINE = "(hd0,gpt2)/vmlinuz-6.8.0-osm root=/dev/vda2 ro quiet ima_policy=tcb"
CMDLINE_PATTERN = r"\(hd0,gpt2\)/vmlinuz-[0-9.]+-osm root=/dev/vda2 ro quiet ima_policy=tcb"
GOLDEN_FILES: Mapping[str, bytes] = {
    "/usr/lib/systemd/systemd": b"systemd 255",
    "/usr/bin/bash": b"GNU bash 5.2",
    "/usr/sbin/sshd": b"OpenSSH 9.6",
    "/usr/bin/osm-trust-agent": b"osm-trust-agent 0.1",
    "/usr/lib/x86_64-linux-gnu/libc.so.6": b"glibc 2.39",
}
