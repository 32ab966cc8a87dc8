"""Dataset preparation: from the files people download to a verified train/val layout."""
