package hostlocal

import (
	"fmt"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cni-suite/cni-suite/pkg/ipalloc"
)

func TestStoreErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code uint
	}{
		{fmt.Errorf("allocate: %w", ipalloc.ErrLockTimeout), types.ErrTryAgainLater},
		{fmt.Errorf("allocate: %w", ipalloc.ErrExhausted), types.ErrInternal},
		{fmt.Errorf("x: %w", types.NewError(7, "invalid y", "")), 7},
	} {
		te, ok := storeError(tc.err).(*types.Error)
		if !ok || te.Code != tc.code {
			t.Errorf("%v: got %v, want code %d", tc.err, storeError(tc.err), tc.code)
		}
	}
	if storeError(nil) != nil {
		t.Error("nil error mapped to an error")
	}
}
