"""libvirt: domain XML, connections, consoles over streams, staging, reaping."""
