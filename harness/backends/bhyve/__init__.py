"""bhyve: bhyve/bhyvectl/bhyveload command lines, host capabilities, taps and bridges."""
