"""refvm: boot reference guests under bhyve or QEMU and prove, from their own serial consoles,
that they boot and that the emulated devices work."""

__version__ = "0.1.0"
