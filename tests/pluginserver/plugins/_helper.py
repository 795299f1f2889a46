"""Not a plugin: files starting with _ are skipped by -d."""
