import Foundation
import ReflowBench
import ReflowServer
import ReflowJobs

// reflowd command line: the HTTP job server, offline jobs, benchmarks and the demo.
let usage = """
usage: reflowd serve [--config FILE --host H --port P --data-dir DIR --workers N --compute-threads N --token-file F]
       reflowd bench toy [--threads N --width W --depth D --batch B --steps S --warmup W ...]
       reflowd bench toy-quality [--threads N --train-steps S --reflow-pairs P --reflow-steps S ...]
       reflowd bench pairs [--threads N --pairs 50000 --steps 100 --reps 3]
       reflowd bench gemm [--threads N --m M --n N --k K --op NT]
       reflowd bench kernels [--count N]
       reflowd demo [--out DIR --steps N --threads N --config FILE --resume]
       reflowd run SPEC.json --out DIR [--threads N --jobs-dir DIR]
       reflowd validate SPEC.json [--jobs-dir DIR]
       reflowd help
"""

func fail(_ message: String, code: Int32 = 2) -> Never {
    FileHandle.standardError.write(Data(("reflowd: " + message + "\n").utf8))
    exit(code)
}

let args = Array(CommandLine.arguments.dropFirst())
do {
    switch args.first {
    case "bench":
        guard args.count >= 2 else { fail("bench needs a name: toy, toy-quality, pairs, gemm or kernels\n" + usage) }
        switch args[1] {
        case "toy": print(try ToyBenchmark.run(Array(args.dropFirst(2))))
        case "gemm": print(try KernelBenchmark.gemm(Array(args.dropFirst(2))))
        case "kernels": print(try KernelBenchmark.kernels(Array(args.dropFirst(2))))
        case "toy-quality": print(try QualityBenchmark.run(Array(args.dropFirst(2))))
        case "pairs": print(try PairsBenchmark.run(Array(args.dropFirst(2))))
        default: fail("unknown benchmark '\(args[1])'; available: toy, toy-quality, pairs, gemm, kernels")
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
