"""Microsoft 365 inventory connector: collects tenant data from Microsoft Graph into snapshots."""

__version__ = "0.1.0"
