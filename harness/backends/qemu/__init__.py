"""QEMU: qemu-system-x86_64 run directly, its QMP socket and the KVM/TCG choice."""
