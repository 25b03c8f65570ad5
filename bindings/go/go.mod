module presence.dev/presence

go 1.19
