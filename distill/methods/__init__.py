"""One LightningModule per method on a small shared base."""
