from cxrdistill.cli import main

main()
