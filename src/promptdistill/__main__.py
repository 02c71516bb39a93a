from promptdistill.cli import main

main()
