"""Each user's own view of the conversations they may read: folders, pins and bookmarks (issue 18)."""
