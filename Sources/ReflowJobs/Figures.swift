import ReflowEngine
import ReflowCodec
import ReflowFlow

/// The PNG pictures jobs render (reflowd draws them itself with ``Canvas``; no plotting library).
enum Figures {
    static let size = 640

    /// A square window centred at 0 holding 99.5 % of the given coordinates (at least ±2).
    static func window(_ tensors: [Tensor]) -> (Float, Float, Float, Float) {
        var mags = [Float]()
        for t in tensors { for v in t.data.prefix(20_000) where v.isFinite { mags.append(abs(v)) } }
        mags.sort()
        let p = mags.isEmpty ? 2 : mags[min(mags.count - 1, Int(Double(mags.count) * 0.995))]
        let m = max(2, p * 1.1)
        return (-m, m, -m, m)
    }

    /// The first `count` rows of `images` ([n, C·H·W] in [−1, 1], NCHW) tiled `columns` wide,
    /// 2-pixel gray padding, each pixel `upscale`² pixels, `text` in tEXt chunks (the job's
    /// parameters, so a grid found on disk says how it was made).
    static func imageGrid(_ images: Tensor, shape: [Int], count: Int = 64, columns: Int = 8, upscale: Int = 2,
                          text: [(String, String)] = []) throws -> [UInt8] {
        let per = shape.reduce(1, *)
        let n = min(count, images.count / max(1, per))
        let tiles: [[UInt8]] = (0..<n).map { i in
            images.data[(i * per)..<((i + 1) * per)].map(ImageSet.byte(fromUnit:))
        }
        return try PNG.encodeGrid(images: tiles, channels: shape[0], height: shape[1], width: shape[2],
                                  columns: columns, padding: 2, upscale: upscale, background: 128, text: text)
    }

    /// Bands of `columns` images: for each band, one row from each tensor in `sets` (all [n, C·H·W]),
    /// so that image i of every set stands in one column (data / latent / reconstruction, or source
    /// / translation). Up to `count` images per set.
    static func imageBands(_ sets: [Tensor], shape: [Int], count: Int = 64, columns: Int = 8,
                           text: [(String, String)] = []) throws -> [UInt8] {
        let per = shape.reduce(1, *)
        let n = min(count, sets.map { $0.count / max(1, per) }.min() ?? 0)
        var rows = [Float]()
        var tiles = 0
        for band in stride(from: 0, to: n, by: columns) {
            let hi = min(n, band + columns)
            for t in sets {
                rows.append(contentsOf: t.data[(band * per)..<(hi * per)])
                rows.append(contentsOf: [Float](repeating: 0, count: (columns - (hi - band)) * per))
                tiles += columns
            }
        }
        return try imageGrid(Tensor(shape: [tiles, per], data: rows), shape: shape, count: tiles, columns: columns, text: text)
    }

    /// Samples (blue) over reference points (gray).
    static func scatter(_ points: Tensor, reference: Tensor?) throws -> [UInt8] {
        var canvas = Canvas(width: size, height: size, window: window([points] + (reference.map { [$0] } ?? [])))
        canvas.axes()
        if let reference { canvas.scatter(Array(reference.data.prefix(2 * 4000)), color: .gray, alpha: 0.3) }
        canvas.scatter(Array(points.data.prefix(2 * 20_000)), color: .blue, alpha: 0.5)
        return try canvas.png()
    }

    /// Straight coupling lines z0 → z1 (orange) of the first `count` pairs, z0 black, z1 blue: the
    /// paper's picture of a coupling (crossing lines are what reflow removes).
    static func coupling(z0: Tensor, z1: Tensor, count: Int) throws -> [UInt8] {
        let n = min(count, z0.shape[0])
        var canvas = Canvas(width: size, height: size, window: window([z0, z1]))
        canvas.axes()
        for i in 0..<n {
            canvas.line(from: (z0.data[2 * i], z0.data[2 * i + 1]), to: (z1.data[2 * i], z1.data[2 * i + 1]), color: .orange, alpha: 0.3)
        }
        canvas.scatter(Array(z0.data.prefix(2 * n)), color: .black, alpha: 0.8)
        canvas.scatter(Array(z1.data.prefix(2 * n)), color: .blue, alpha: 0.8)
        return try canvas.png()
    }

    /// ODE trajectories (orange polylines through the recorded frames) from start (black) to end (blue).
    static func trajectories(_ frames: [Tensor], reference: Tensor?) throws -> [UInt8] {
        guard let first = frames.first, let last = frames.last else { return [] }
        let n = first.shape[0]
        var canvas = Canvas(width: size, height: size, window: window([first, last] + (reference.map { [$0] } ?? [])))
        canvas.axes()
        if let reference { canvas.scatter(Array(reference.data.prefix(2 * 4000)), color: .gray, alpha: 0.3) }
        for i in 0..<n {
            for k in 1..<frames.count {
                let a = frames[k - 1].data, b = frames[k].data
                canvas.line(from: (a[2 * i], a[2 * i + 1]), to: (b[2 * i], b[2 * i + 1]), color: .orange, alpha: 0.35)
            }
        }
        canvas.scatter(first.data, color: .black, alpha: 0.8)
        canvas.scatter(last.data, color: .blue, alpha: 0.8)
        return try canvas.png()
    }
}
