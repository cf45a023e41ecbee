/// The forced boundaries and element-width regions a format's boundary planner has found, in
/// stream order, with the lookups `BoundaryPlanner` asks for (binary searches: a planner is
/// asked at every buffer and every chunk).
struct PlannedCuts {
    /// Increasing offsets.
    private(set) var boundaries: [Int64] = []
    /// Regions by start offset (increasing); each runs to the next one's start.
    private var widths: [(start: Int64, width: Int)] = []

    var isEmpty: Bool { boundaries.isEmpty }
    var last: Int64? { boundaries.last }

    /// Adds a boundary; one not after the last is ignored, so the list stays increasing.
    mutating func cut(at offset: Int64) {
        if offset > (boundaries.last ?? -1) { boundaries.append(offset) }
    }

    /// Data from `start` on has elements of `width` bytes (until the next region's start).
    mutating func width(_ width: Int, from start: Int64) { widths.append((start, width)) }

    /// The smallest boundary `>= offset`.
    func next(atOrAfter offset: Int64) -> Int64? {
        let i = firstBoundary(atOrAfter: offset)
        return i < boundaries.count ? boundaries[i] : nil
    }

    /// The boundaries `>= offset`, in order.
    func boundaries(atOrAfter offset: Int64) -> ArraySlice<Int64> { boundaries[firstBoundary(atOrAfter: offset)...] }

    /// The width of the region holding `offset`, 1 before the first.
    func width(at offset: Int64) -> Int {
        let i = regionsStarting(atOrBefore: offset)
        return i == 0 ? 1 : widths[i - 1].width
    }

    /// The width regions from the one holding `offset` (if any) on.
    func regions(from offset: Int64) -> ArraySlice<(start: Int64, width: Int)> {
        widths[max(0, regionsStarting(atOrBefore: offset) - 1)...]
    }

    private func firstBoundary(atOrAfter offset: Int64) -> Int {
        var lo = 0
        var hi = boundaries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if boundaries[mid] < offset { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// How many regions start at or before `offset`.
    private func regionsStarting(atOrBefore offset: Int64) -> Int {
        var lo = 0
        var hi = widths.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if widths[mid].start <= offset { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }
}
