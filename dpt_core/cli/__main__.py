from dpt_core.cli import main

main()
