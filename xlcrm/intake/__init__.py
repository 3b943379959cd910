"""What comes in: the standard template, validation and fixes, imports of existing lists."""
