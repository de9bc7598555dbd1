"""Real-kernel capture on /dev/kvm: ioctls, guest programs, tracefs, scenarios, the recorder."""
