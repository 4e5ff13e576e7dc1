// Package cnierr builds CNI error values with the spec's error codes, so every plugin answers
// bad input the same way: a code the runtime can act on and a message naming the field.
package cnierr

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
)

// Error codes from the CNI spec that the suite uses beyond those in pkg/types.
const (
	// ErrPluginNotAvailable (50): STATUS, the plugin cannot serve ADD.
	ErrPluginNotAvailable uint = 50
	// ErrLimitedConnectivity (51): STATUS, existing containers may be affected too.
	ErrLimitedConnectivity uint = 51
)

// InvalidConfig is code 7 (invalid network config) naming the key at fault.
func InvalidConfig(key string, format string, a ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid %s: %s", key, fmt.Sprintf(format, a...)), "")
}

// Decoding is code 6 (failed to decode content).
func Decoding(err error) *types.Error {
	return types.NewError(types.ErrDecodingFailure, err.Error(), "")
}

// Unsupported is code 2 (unsupported field) naming the key and the value.
func Unsupported(key, value, why string) *types.Error {
	return types.NewError(types.ErrUnsupportedField, fmt.Sprintf("unsupported %s %q: %s", key, value, why), "")
}

// TryAgain is code 11: a transient condition, the runtime should retry.
func TryAgain(err error) *types.Error {
	return types.NewError(types.ErrTryAgainLater, err.Error(), "")
}

// Internal is code 999 with context; it keeps an existing *types.Error as it is.
func Internal(err error) error {
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}
