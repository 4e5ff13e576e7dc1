package ipalloc

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"math/bits"
	"net/netip"
)

// The used-address bitmap of the index is cut into blocks of blockSize aligned addresses,
// one small file each, so that finding a free address reads a few hundred bytes per 4096
// addresses instead of probing the reservations one by one.
const (
	blockBits  = 12
	blockSize  = 1 << blockBits
	blockWords = blockSize / 64
	blockBytes = blockSize / 8
)

type bitmap [blockWords]uint64

func (b *bitmap) get(off int) bool { return b[off>>6]>>(off&63)&1 == 1 }

func (b *bitmap) set(off int, v bool) {
	if v {
		b[off>>6] |= 1 << (off & 63)
	} else {
		b[off>>6] &^= 1 << (off & 63)
	}
}

func (b *bitmap) empty() bool {
	for _, w := range b {
		if w != 0 {
			return false
		}
	}
	return true
}

func (b *bitmap) marshal() []byte {
	out := make([]byte, blockBytes)
	for i, w := range b {
		binary.LittleEndian.PutUint64(out[i*8:], w)
	}
	return out
}

func unmarshalBitmap(data []byte) (*bitmap, error) {
	if len(data) != blockBytes {
		return nil, fmt.Errorf("bitmap block of %d bytes, want %d", len(data), blockBytes)
	}
	var b bitmap
	for i := range b {
		b[i] = binary.LittleEndian.Uint64(data[i*8:])
	}
	return &b, nil
}

// nextFreeBit returns the first offset in [from, to] whose bit is clear, or -1.
func (b *bitmap) nextFreeBit(from, to int) int {
	for o := from; o <= to; {
		free := ^b[o>>6] >> (o & 63) // ones where free, from o on (shifted-in zeros: not free)
		if free == 0 {
			o = (o | 63) + 1
			continue
		}
		o += bits.TrailingZeros64(free)
		if o > to {
			return -1
		}
		return o
	}
	return -1
}

// blockOf splits a into the base address of its block and its offset in the block.
func blockOf(a netip.Addr) (netip.Addr, int) {
	if a.Is4() {
		v := a.As4()
		u := binary.BigEndian.Uint32(v[:])
		binary.BigEndian.PutUint32(v[:], u&^(blockSize-1))
		return netip.AddrFrom4(v), int(u & (blockSize - 1))
	}
	v := a.As16()
	off := int(v[14]&0x0f)<<8 | int(v[15])
	v[14] &= 0xf0
	v[15] = 0
	return netip.AddrFrom16(v), off
}

// atOffset is base+off for a block base and an offset below blockSize.
func atOffset(base netip.Addr, off int) netip.Addr {
	if base.Is4() {
		v := base.As4()
		u := binary.BigEndian.Uint32(v[:]) | uint32(off)
		binary.BigEndian.PutUint32(v[:], u)
		return netip.AddrFrom4(v)
	}
	v := base.As16()
	v[14] |= byte(off >> 8)
	v[15] = byte(off)
	return netip.AddrFrom16(v)
}

// nextBlock is the base of the block after base; false at the end of the address space.
func nextBlock(base netip.Addr) (netip.Addr, bool) {
	last := atOffset(base, blockSize-1)
	n := last.Next()
	return n, n.IsValid()
}

func blockName(base netip.Addr) string {
	return hex.EncodeToString(base.AsSlice())
}

func parseBlockName(name string) (netip.Addr, bool) {
	b, err := hex.DecodeString(name)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(b)
	if !ok || a.Is4In6() {
		return netip.Addr{}, false
	}
	if base, _ := blockOf(a); base != a {
		return netip.Addr{}, false
	}
	return a, true
}

// The per-attachment part of the index: reservations grouped into bucket files by a hash of
// their owner key, so that DEL and CHECK read one small file instead of every reservation.
// The number of buckets follows the number of reservations (one per 128, a power of two up to
// maxBuckets, grown by a rebuild when the count outgrows it): a bucket holds about 64 to 128
// lines whatever the size of the network (up to half a million reservations), and a rebuild
// writes few files when there are few reservations.
const (
	maxBuckets       = 4096
	linesPerBucket   = 128
	occupancyWords   = maxBuckets / 64
	bucketNameDigits = 3
)

func bucketsFor(n int) int {
	nb := 1
	for nb < maxBuckets && nb*linesPerBucket < n {
		nb *= 2
	}
	return nb
}

func bucketOf(key string, nb int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(nb))
}

func bucketName(b int) string { return fmt.Sprintf("%0*x", bucketNameDigits, b) }
