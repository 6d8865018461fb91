"""Feedback on messages: one rating (up or down) with reasons and a comment per user and message."""
