package harness

import (
	"testing"

	"github.com/kds-lease-manager/kds-lease-manager/internal/enginetest"
)

func TestMain(m *testing.M) { enginetest.Main(m) }
