module presence.dev/examples

go 1.19

require presence.dev/presence v0.0.0

// The binding lives in this repository: no download (GOPROXY=off works).
replace presence.dev/presence => ../../bindings/go
