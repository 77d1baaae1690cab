import Foundation
import ReflowBench
import ReflowEngine
import ReflowServer
import ReflowJobs

// reflowd command line: the HTTP job server, offline jobs, benchmarks and the demo.
let usage = """
usage: reflowd serve [--config FILE --host H --port P --data-dir DIR --workers N --compute-threads N --token-file F]
       reflowd bench toy [--threads N --width W --depth D --batch B --steps S --warmup W ...]
       reflowd bench toy-quality [--threads N --train-steps S --reflow-pairs P --reflow-steps S ...]
       reflowd bench pairs [--threads N --pairs 50000 --steps 100 --reps 3]
       reflowd bench image [--threads N --batch 64 --ch 32,64 --nb 2 --steps 20 --sample-batch 64 --sample-steps 1]
       reflowd bench mri [--threads 1 --size 28 --features 32 --steps 8 --batch 16 --train-batch 8 --reps 5]
       reflowd bench gemm [--threads N --m M --n N --k K --op NT]
       reflowd bench kernels [--count N]
       reflowd demo [--out DIR --steps N --threads N --config FILE --resume]
       reflowd run SPEC.json --out DIR [--threads N --jobs-dir DIR]
       reflowd validate SPEC.json [--jobs-dir DIR]
       reflowd blas-core [--coretype]
       reflowd help
"""

func fail(_ message: String, code: Int32 = 2) -> Never {
    FileHandle.standardError.write(Data(("reflowd: " + message + "\n").utf8))
    exit(code)
}

let args = Array(CommandLine.arguments.dropFirst())

// Freed activation buffers stay in the heap (see Memory.keepFreedBuffers).
Memory.keepFreedBuffers()

// OpenBLAS chose its kernels before main ran. If it chose kernels below what the CPU can run
// (Debian 12's 0.3.21 falls back to Prescott/SSE3 on cores it does not know), this re-executes
// the process with OPENBLAS_CORETYPE set and does not return. Every command that computes
// (serve, run, bench, demo, validate) goes through it; `blas-core` must see OpenBLAS's own
// choice, and `help` computes nothing.
if !["blas-core", "help", "--help", "-h"].contains(args.first ?? "help") {
    BLASKernel.ensureBestKernel(arguments: CommandLine.unsafeArgv) { line in
        FileHandle.standardError.write(Data(("reflowd: " + line + "\n").utf8))
    }
}

do {
    switch args.first {
    case "bench":
        guard args.count >= 2 else { fail("bench needs a name: toy, toy-quality, pairs, image, mri, gemm or kernels\n" + usage) }
        switch args[1] {
        case "toy": print(try ToyBenchmark.run(Array(args.dropFirst(2))))
        case "gemm": print(try KernelBenchmark.gemm(Array(args.dropFirst(2))))
        case "kernels": print(try KernelBenchmark.kernels(Array(args.dropFirst(2))))
        case "toy-quality": print(try QualityBenchmark.run(Array(args.dropFirst(2))))
        case "pairs": print(try PairsBenchmark.run(Array(args.dropFirst(2))))
        case "image": print(try ImageBenchmark.run(Array(args.dropFirst(2))))
        case "mri": print(try MRIBenchmark.run(Array(args.dropFirst(2))))
        default: fail("unknown benchmark '\(args[1])'; available: toy, toy-quality, pairs, image, mri, gemm, kernels")
        }
    case "demo":
        print(try Demo.run(Array(args.dropFirst())) { message in
            FileHandle.standardError.write(Data(("reflowd demo: " + message + "\n").utf8))
        })
    case "serve":
        Serve.run(Array(args.dropFirst()))
    case "run":
        print(try RunCommand.run(Array(args.dropFirst())) { message in
            FileHandle.standardError.write(Data(("reflowd run: " + message + "\n").utf8))
        })
    case "validate":
        print(try RunCommand.validate(Array(args.dropFirst())))
    case "docs":
        // The job-kind registry as Markdown (the generated block of docs/JOBS.md).
        guard args.dropFirst().first == "jobs" else { fail("usage: reflowd docs jobs") }
        print(JobKinds.referenceMarkdown, terminator: "")
    case "blas-core":
        // `--coretype` prints the OPENBLAS_CORETYPE value other processes on this machine should
        // use (the Makefile exports it for the test binaries), or nothing when OpenBLAS's own
        // choice is right or the environment already sets one.
        let f = try Flags(Array(args.dropFirst()), allowed: [], booleans: ["coretype"])
        let cpu = CPUFeatures.current(), core = BLASKernel.openblasCore
        let action = BLASKernel.decide(cpu: cpu, openblasCore: core, environment: ProcessInfo.processInfo.environment)
        if f.bool("coretype") {
            if case .reexec(let target) = action { print(target) }
        } else {
            var actionText = "keep"
            if case .reexec(let target) = action { actionText = "set OPENBLAS_CORETYPE=\(target)" }
            print(jsonLine(["openblas_core": core, "cpu": cpu.description, "cpu_best": BLASKernel.bestCore(for: cpu) ?? NSNull(),
                            "action": actionText, "openblas": BLAS.libraryConfig]))
        }
    case "help", "--help", "-h", nil:
        print(usage)
    default:
        fail("unknown command '\(args[0])'\n" + usage)
    }
} catch let e as CLIError {
    fail(e.description)
} catch {
    fail("\(error)", code: 1)
}
