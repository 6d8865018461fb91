"""Key/value metadata of conversations and messages: its bounds, and the filters over it."""
