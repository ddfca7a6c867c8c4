"""Development helpers: a throwaway Prosody server and the local demo."""
