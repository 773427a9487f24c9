"""The referral page and the handout; the safe-contact channels."""
