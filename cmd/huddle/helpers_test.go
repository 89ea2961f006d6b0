package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// huddleBinary returns $HUDDLE_BIN or builds this command into the test's
// temporary directory.
func huddleBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("HUDDLE_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "huddle")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// freePort returns a loopback port free now for TCP, and for UDP too when
// udp (the server uses one number for both ICE-UDP and ICE-TCP).
func freePort(t *testing.T, udp bool) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if !udp {
			l.Close()
			return port
		}
		c, err := net.ListenPacket("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			c.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}
