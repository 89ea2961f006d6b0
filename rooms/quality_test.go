package rooms

import (
	"math"
	"testing"
)

// TestNetLoss: a subscriber's reported loss, less what the publisher's
// uplink lost already, is what its own downlink lost.
func TestNetLoss(t *testing.T) {
	for _, c := range []struct{ total, up, want float64 }{
		{0.1, 0, 0.1},        // a clean uplink: all of it is the downlink's
		{0.1, 0.1, 0},        // all of it upstream
		{0.19, 0.1, 0.1},     // 10 % on each path: 1 - 0.9*0.9
		{0.05, 0.1, 0},       // the report's interval saw less: not negative
		{0.5, 1, 0.5},        // nothing came in: nothing to take out
		{0.3, -0.1, 0.3},     // nonsense uplink figure: ignored
		{0.0, 0.02, 0},       // no loss reported
		{1, 0.5, 1},          // everything lost downstream
		{0.28, 0.2, 0.1},     // 1 - 0.72/0.8
		{0.505, 0.01, 0.5},   // 1 - 0.495/0.99
		{0.1009, 0.001, 0.1}, // 1 - 0.8991/0.999
	} {
		if got := netLoss(c.total, c.up); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("netLoss(%v, %v) = %v; want %v", c.total, c.up, got, c.want)
		}
	}
}
