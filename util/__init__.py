"""Small helpers with no project dependencies: hashing, atomic file writes, URL checks."""
