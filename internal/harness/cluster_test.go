package harness

import (
	"net"
	"strconv"
	"testing"
)

// A worker's health port is drawn below the ephemeral range, where no outgoing
// connection can take it between FreeAddr and the worker's listen (a flake seen in CI).
func TestFreeAddrIsBelowTheEphemeralPorts(t *testing.T) {
	lo, hi := belowEphemeral()
	for range 20 {
		addr, err := FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(port)
		if n < lo || n >= hi {
			t.Fatalf("FreeAddr = %s, want a port in [%d, %d)", addr, lo, hi)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("the address FreeAddr returned cannot be listened on: %v", err)
		}
		l.Close()
	}
}
