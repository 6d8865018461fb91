"""Links between conversations (RELATED, CONTINUES, CITES, DUPLICATE) and their backlinks (issue 18 item 4)."""
