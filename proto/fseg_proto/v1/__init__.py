"""Generated from proto/fseg/v1/fseg.proto by proto/generate.py; do not edit."""
