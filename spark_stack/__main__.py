from spark_stack.cli import run

run()
