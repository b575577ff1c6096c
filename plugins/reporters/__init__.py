"""Built-in reporters: implement lifecycle hooks only."""
